"""The pretrained language model side: loading, masked-LM head, prompted forward passes."""
