"""lmeval: LLM evaluation with LMDeploy servers and OpenCompass in one command."""

__version__ = "0.1.0"
