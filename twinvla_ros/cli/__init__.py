"""The `twinvla-ros` command line (main.py) and the sim demo (demo.py): the top layer, which
wires graphs, runners and nodes together and holds no robot logic of its own."""
