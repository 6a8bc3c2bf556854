"""Client programs run as separate processes against the fake server (see ``fakellm``)."""
