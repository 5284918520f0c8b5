"""The HTTP API: sessions and the portal feed (`app`), request and response models (`models`)."""
