// Command argolua runs an Argo CD resource health check (Lua) on Kubernetes objects the way the Argo
// CD application controller does, and prints one JSON line per object:
// {"name": ..., "status": "Healthy|Progressing|Degraded|Suspended|Missing|Unknown", "message": ...}.
//
//	argolua -script health.lua [FILE...]
//
// Objects are read as JSON or YAML from the files named as arguments, or from stdin without any
// ("-" names stdin too); multi-document YAML, JSON streams and `kind: List` are expanded.
//
// What is mirrored from Argo CD (util/lua): the object becomes the global `obj` (objects as tables
// with string keys, arrays as tables indexed from 1, JSON null as nil); a custom script gets only
// the package, base and table libraries (no string library unless useOpenLibs is set, which this
// harness does not model); the script has one second; it must return a table whose status is one of
// Argo CD's health codes, and any other status reads as Unknown.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"kubetune.dev/localcluster/gitops/objects"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	scriptPath := flag.String("script", "", "the health check (Lua) to run")
	flag.Parse()
	if *scriptPath == "" {
		fmt.Fprintln(os.Stderr, "usage: argolua -script health.lua [FILE...]")
		os.Exit(2)
	}
	script, err := os.ReadFile(*scriptPath)
	if err != nil {
		fail(err)
	}
	inputs := flag.Args()
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	out := json.NewEncoder(os.Stdout)
	for _, input := range inputs {
		objects, err := objects.Read(input)
		if err != nil {
			fail(fmt.Errorf("%s: %w", input, err))
		}
		for _, u := range objects {
			res, err := health(u, string(script))
			if err != nil {
				fail(fmt.Errorf("%s: %s: %w", input, u.GetName(), err))
			}
			if err := out.Encode(res); err != nil {
				fail(err)
			}
		}
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "argolua: %v\n", err)
	os.Exit(1)
}

func health(u *unstructured.Unstructured, script string) (result, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return result{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return result{}, err
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return result{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	status, err := stringField(hs, "status")
	if err != nil {
		return result{}, err
	}
	message, err := stringField(hs, "message")
	if err != nil {
		return result{}, err
	}
	if !healthCodes[status] {
		return result{u.GetName(), "Unknown", "Lua returned an invalid health status"}, nil
	}
	return result{u.GetName(), status, message}, nil
}

// stringField reads a field of the returned table; Argo CD decodes the table through JSON into
// string fields, so anything but a string (or nil) is an error there too.
func stringField(t *lua.LTable, key string) (string, error) {
	switch v := t.RawGetString(key).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(v), nil
	default:
		return "", fmt.Errorf("hs.%s is a %s, not a string", key, v.Type())
	}
}

// toLua converts an unstructured value as Argo CD does: maps to tables with string keys, slices to
// tables indexed from 1, numbers to Lua numbers, null to nil.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	}
	return lua.LNil
}
