"""A test fleet of real sshd hosts on one machine: bubblewrap sandboxes, optionally air-gapped in network namespaces.

    with Fleet(new_state_dir(), 3, groups={"staging": [1], "nodes": [2, 3]}) as fleet:
        subprocess.run([*fleet.command_prefix, "ansible-playbook", "-i", str(fleet.inventory_path), ...])
"""

from .errors import FleetError
from .fleet import Fleet, down, new_state_dir
from .nodes import Node

__all__ = ["Fleet", "FleetError", "Node", "down", "new_state_dir"]
