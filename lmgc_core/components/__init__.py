"""The contract with plugins and how they are found: the component interfaces, the pluggy
hook specifications, entry-point discovery, the registry, component specs (a name or
``{"name": ...}``) and factories (their options checked before a component is built). A
third-party prior or stage depends on this layer (and ``util``) only.
"""
