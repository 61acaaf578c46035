"""Training loops: CTR models now; PA-MLM pretraining and finetuning next."""
