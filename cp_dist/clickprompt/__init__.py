"""ClickPrompt: the CTR model as the prompt generator of a language model."""
