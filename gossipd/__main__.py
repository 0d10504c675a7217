"""``python -m gossipd`` runs the daemon (same as the ``gossipd`` script)."""

from gossipd.daemon.main import main

main()
