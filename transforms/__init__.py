"""consentgate: consent-aware enforcement, validation and publication of lake datasets."""

__version__ = "0.1.0"
