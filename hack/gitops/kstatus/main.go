// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux
// and kpt wait on) computes for Kubernetes objects: one JSON line per object,
// {"name": ..., "status": "Current|InProgress|Failed|Terminating|...", "message": ...}.
//
// Objects are read as JSON or YAML from the files named as arguments, or from stdin without any
// ("-" names stdin too); multi-document YAML, JSON streams and `kind: List` are expanded.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
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
		objects, err := readObjects(input)
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

func readObjects(input string) ([]*unstructured.Unstructured, error) {
	var r io.Reader = os.Stdin
	if input != "-" {
		f, err := os.Open(input)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
	var objects []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objects, nil
			}
			return nil, err
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue // an empty YAML document
		}
		decoded, err := decode(raw)
		if err != nil {
			return nil, err
		}
		objects = append(objects, decoded...)
	}
}

// decode goes through the unstructured JSON scheme, as a client reading from the API server does:
// whole numbers become int64, which kstatus needs to compare generation and observedGeneration.
func decode(raw []byte) ([]*unstructured.Unstructured, error) {
	var head struct {
		Items json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, err
	}
	if head.Items == nil {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		return []*unstructured.Unstructured{u}, nil
	}
	list := &unstructured.UnstructuredList{}
	if err := list.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	objects := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		objects[i] = &list.Items[i]
	}
	return objects, nil
}
