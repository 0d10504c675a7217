"""``python -m gossipd`` runs the daemon (same as the ``gossipd`` script)."""

from gossipd.daemon.driver import main

main()
