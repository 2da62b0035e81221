// The node's sandbox ("pause") program: holds a pod's namespaces open until told to stop.
module nsprov.dev/testcluster/pause

go 1.26.0
