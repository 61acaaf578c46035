"""cp_dist: ClickPrompt (WWW 2024) as a distributed training system."""

__version__ = "0.1.0"
