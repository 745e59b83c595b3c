package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// About introduces sealrelay.toml in the generated reference.
const About = `sealrelay.toml configures the agent (serve) and the commands that read
its config (check, queue, creds --vault). It is TOML and holds no secret,
only where the secrets are. Relative paths are taken from the directory of
the file. Every key is optional except relay.address; a key that is not
set takes its default. Unknown keys and bad values are errors that name
the file, the key and, where known, the line.`

// Table is one table of sealrelay.toml as the reference documents it.
type Table struct {
	Name  string // "" for the top level, "listen", "relay", "credentials.vault"
	Array bool   // an array of tables ([[relay]]): it may appear several times
	Doc   string
	Keys  []Key
	// Commented says the example config shows the table commented out: its
	// sample values (routes, a rotation fleet) would act if left in, and the
	// feature is one an operator turns on (tag example:"commented").
	Commented bool
}

// Header is the table's header line in a file: [listen], [[relay]]; ""
// for the top level.
func (t Table) Header() string {
	switch {
	case t.Name == "":
		return ""
	case t.Array:
		return "[[" + t.Name + "]]"
	}
	return "[" + t.Name + "]"
}

// Key is one key of a table.
type Key struct {
	Name string // as written in the file: max_message_bytes
	Type string // string, integer, boolean, duration, array of strings
	// Default is the default as a TOML value ("127.0.0.1:2525" quoted,
	// 100, []) or, where Default computes it, words saying how.
	Default string
	// Computed says Default is words, not a TOML value.
	Computed bool
	// Example is a TOML value for an example file: the default, or a
	// sample where there is none or it is computed.
	Example string
	// Bytes says the value is a size in bytes.
	Bytes bool
	Doc   string
}

// Reference describes every key of sealrelay.toml, table by table in the
// order of the Config struct: the text from the struct tags (see Config),
// the values from Default. The first table is the top level. It panics if
// a key lacks its doc, since then the reference would be incomplete; a
// test keeps that from shipping.
func Reference() []Table {
	d := Default()
	d.Relays = []Relay{defaultRelay(0)}
	d.Routes = []Route{defaultRoute(0)}
	d.Sendmail.Allow = []SenderRule{{}}
	var out []Table
	addTable(&out, "", false, false, About, reflect.ValueOf(d).Elem())
	return out
}

var durationType = reflect.TypeFor[Duration]()

// addTable appends the table of struct v, named name, and then its
// sub-tables.
func addTable(out *[]Table, name string, array, commented bool, doc string, v reflect.Value) {
	*out = append(*out, Table{Name: name, Array: array, Doc: doc, Commented: commented})
	i := len(*out) - 1
	type sub struct {
		name, doc        string
		array, commented bool
		v                reflect.Value
	}
	var subs []sub
	for f, fv := range fields(v) {
		key := f.Tag.Get("toml")
		if !f.IsExported() || key == "" || key == "-" {
			continue
		}
		path := key
		if name != "" {
			path = name + "." + key
		}
		doc := f.Tag.Get("doc")
		if doc == "" {
			panic("config: no doc tag for " + path)
		}
		sc := commented || f.Tag.Get("example") == "commented"
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			subs = append(subs, sub{path, doc, false, sc, fv})
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			subs = append(subs, sub{path, doc, true, sc, fv.Index(0)})
		default:
			(*out)[i].Keys = append((*out)[i].Keys, newKey(path, key, f, fv))
		}
	}
	for _, s := range subs {
		addTable(out, s.name, s.array, s.commented, s.doc, s.v)
	}
}

// fields yields the fields of struct v, those of an embedded struct
// (Limits) in its place, as TOML decodes them.
func fields(v reflect.Value) func(yield func(reflect.StructField, reflect.Value) bool) {
	return func(yield func(reflect.StructField, reflect.Value) bool) {
		for j := range v.NumField() {
			f := v.Type().Field(j)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				for ef, ev := range fields(v.Field(j)) {
					if !yield(ef, ev) {
						return
					}
				}
				continue
			}
			if !yield(f, v.Field(j)) {
				return
			}
		}
	}
}

// newKey documents the field f holding the default v.
func newKey(path, name string, f reflect.StructField, v reflect.Value) Key {
	k := Key{Name: name, Doc: f.Tag.Get("doc"), Bytes: f.Tag.Get("unit") == "bytes"}
	switch {
	case f.Type == durationType:
		k.Type = "duration"
	case f.Type.Kind() == reflect.String:
		k.Type = "string"
	case f.Type.Kind() == reflect.Bool:
		k.Type = "boolean"
	case f.Type.Kind() == reflect.Int || f.Type.Kind() == reflect.Int64:
		k.Type = "integer"
	case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
		k.Type = "array of strings"
	default:
		panic(fmt.Sprintf("config: %s: no reference type for %s", path, f.Type))
	}
	k.Default = tomlValue(v)
	k.Example = k.Default
	if words, ok := f.Tag.Lookup("default"); ok {
		k.Default, k.Computed = words, true
	}
	if ex, ok := f.Tag.Lookup("example"); ok {
		k.Example = ex
	}
	return k
}

// tomlValue writes v as a TOML value; durations in their shortest form
// ("5m", not "5m0s").
func tomlValue(v reflect.Value) string {
	var x any
	switch d := v.Interface().(type) {
	case Duration:
		x = shortDuration(d.Duration)
	case []string:
		if len(d) == 0 {
			return "[]"
		}
		q := make([]string, len(d))
		for i, s := range d {
			q[i] = tomlValue(reflect.ValueOf(s))
		}
		return "[" + strings.Join(q, ", ") + "]"
	default:
		x = d
	}
	var b strings.Builder
	if err := toml.NewEncoder(&b).Encode(map[string]any{"v": x}); err != nil {
		panic("config: " + err.Error())
	}
	return strings.TrimSpace(strings.TrimPrefix(b.String(), "v = "))
}

// shortDuration writes d as time.Duration.String does, without the zero
// units at its end: 5m, 1m, 120h, 1h30m, 30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Note returns a remark on the default for readers, or "": for a size,
// its value in binary units where it is a whole number of them ("35 MiB").
func (k Key) Note() string {
	if !k.Bytes || k.Computed {
		return ""
	}
	n, err := strconv.ParseInt(k.Default, 10, 64)
	if err != nil {
		return ""
	}
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return ""
}
