"""The one exception the fleet harness raises for its own failures."""


class FleetError(RuntimeError):
    """A fleet could not be brought up or down; the message says which node and why."""
