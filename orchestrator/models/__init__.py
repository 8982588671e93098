"""Model weights in the fleet: pinned, staged into a store per node, shared over the LAN, collected.

    snapshot.py  a revision's files with size and sha256 (the manifest every copy is checked against)
    store.py     what a node's store holds, read in one command; hashing a revision on the node
    transfer.py  node to node (direct `tar | ssh`, or relayed by the controller), mirror -> node
    mirror.py    the controller's mirror; a revision fetched from the hub lands there first
    stage.py     every node gets what the plan places on it: peers, then the mirror, then the hub
    gc.py        which releases reference which revision; what `swarm models gc` may remove
    disk.py      weight bytes per node against its free disk (`swarm plan`)
    run.py       the calls the deploy and rollback engines make before a phase touches a node

The pins themselves (`repo@revision`, the store's paths, the container's mount) are rendered
with the services (orchestrator/render/weights.py); docs/models.md explains the whole.
"""
