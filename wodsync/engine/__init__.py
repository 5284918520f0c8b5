"""The host engine: desired state → observe → plan → apply, over pluggable transports."""
