"""The contract with plugins and how they are found: the component interfaces, the pluggy
hook specifications, entry-point discovery and the registry. A third-party
prior or stage depends on this layer (and ``util``) only.
"""
