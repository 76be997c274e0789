// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux
// and kpt wait on) computes for Kubernetes objects: one JSON line per object,
// {"name": ..., "status": "Current|InProgress|Failed|Terminating|...", "message": ...}.
//
// Objects are read as JSON or YAML from the files named as arguments, or from stdin without any
// ("-" names stdin too); multi-document YAML, JSON streams and `kind: List` are expanded.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"kubetune.dev/localcluster/gitops/objects"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	out := json.NewEncoder(os.Stdout)
	for _, input := range inputs {
		objects, err := objects.Read(input)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", input, err)
			os.Exit(1)
		}
		for _, u := range objects {
			res, err := status.Compute(u)
			if err != nil {
				fmt.Fprintf(os.Stderr, "kstatus: %s: %s: %v\n", input, u.GetName(), err)
				os.Exit(1)
			}
			if err := out.Encode(result{u.GetName(), string(res.Status), res.Message}); err != nil {
				fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
				os.Exit(1)
			}
		}
	}
}
