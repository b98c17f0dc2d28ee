"""Host-side pytest configuration of the e2e suite.

guest/ holds the suite that runs inside the VM; the host must never collect it.
"""

collect_ignore = ["guest"]
