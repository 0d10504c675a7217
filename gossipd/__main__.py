"""``python -m gossipd`` runs the daemon (same as the ``gossipd`` script)."""

from gossipd.daemon import main

main()
