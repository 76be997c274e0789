// Package objects reads Kubernetes objects as both harnesses get them: JSON or YAML, one object, a
// multi-document stream or a List, from a file or stdin ("-").
package objects

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Read returns every object in input, a path or "-".
func Read(input string) ([]*unstructured.Unstructured, error) {
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
