// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for the e2e
// control plane (see ../build.sh). Its version comes from the module version in go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
