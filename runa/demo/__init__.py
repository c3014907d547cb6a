"""A small daemon on the service base, used to show and test the foundation."""
