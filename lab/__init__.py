"""Network-namespace laboratory shared by the tests and the benchmark: namespaces, a pod/world
topology, listeners and probes (lab.netlab), and the one way to run the nftredir CLI in them."""
