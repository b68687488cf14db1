"""Training side: torch + timm live here and only here. Serving never imports this package."""
