package cliflags

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// The configuration file of serve and the connectors (docs/reference.md,
// "Configuration file"): a YAML mapping whose keys are the command's flag
// names without the dashes in front, e.g.
//
//	addr: 127.0.0.1:8181
//	max-batch-bytes: 16777216
//	data-api-paths: [crmauthz/decision, crmauthz/allow]
//
// A value sets its flag unless the command line or the flag's CRMAUTHZ_*
// twin did: flag > environment > file > default. Every value then goes
// through the same rules as the flags (Validate).

// configFlag is the flag that names the file.
const configFlag = "config"

// sourceAnnotation marks a flag set from the file (its value is the file's
// name), so that a refused value names the key and the file.
const sourceAnnotation = "crmauthz/config-file"

// AddConfigFlag registers --config on a command that reads the file; its
// rule is BlankOrPath.
func AddConfigFlag(f *pflag.FlagSet, path *string) {
	f.StringVar(path, configFlag, "", "YAML file of flag values, keyed by flag name (docs/reference.md \"Configuration file\"); flags and CRMAUTHZ_* variables override it")
}

// ApplyConfigFile sets every flag not yet set (by the command line or the
// environment) from the file --config names, when it names one. An unknown
// key, a value that is not a scalar or a list of scalars, or one the flag
// does not parse is an error naming the key: exit 2.
func ApplyConfigFile(fs *pflag.FlagSet) error {
	cf := fs.Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	path := cf.Value.String()
	if _, err := os.Stat(path); err != nil {
		return usage(fmt.Errorf("--%s: %w", configFlag, err))
	}
	k := koanf.New(".") // flag names hold no dots: a nested mapping is an unknown key
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return usage(fmt.Errorf("--%s %s: not a YAML mapping of flag names to values: %w", configFlag, path, err))
	}
	all := k.All()
	keys := make([]string, 0, len(all))
	for key := range all {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	var errs []error
	for _, key := range keys {
		f := fs.Lookup(key)
		switch {
		case f == nil || key == configFlag || key == "help":
			errs = append(errs, fmt.Errorf("%s: key %q: not a setting of this command (the keys are its flag names)", path, key))
			continue
		case f.Changed: // the command line or the environment wins
			continue
		}
		v, err := configValue(all[key])
		if err == nil {
			err = fs.Set(key, v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: key %q: %w", path, key, err))
			continue
		}
		if f.Annotations == nil {
			f.Annotations = map[string][]string{}
		}
		f.Annotations[sourceAnnotation] = []string{path}
	}
	if len(errs) > 0 {
		return usage(errors.Join(errs...))
	}
	return nil
}

// configValue is the text a flag parses for a YAML value: a scalar as
// written, a list as comma-separated items.
func configValue(v any) (string, error) {
	switch v := v.(type) {
	case []any:
		items := make([]string, len(v))
		for i, it := range v {
			s, err := configScalar(it)
			if err != nil {
				return "", err
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("list item %q holds a comma", s)
			}
			items[i] = s
		}
		return strings.Join(items, ","), nil
	default:
		return configScalar(v)
	}
}

func configScalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", fmt.Errorf("%v is not a value", v)
		}
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case nil:
		return "", errors.New("no value")
	}
	return "", fmt.Errorf("a %T is not a value: want a string, number, boolean or a list of them", v)
}

// flagSource says where a refused flag's value came from, for Validate's
// messages: the file and key, or the flag and its environment twin.
func flagSource(f *pflag.Flag) string {
	if file := f.Annotations[sourceAnnotation]; len(file) > 0 {
		return fmt.Sprintf("%s: key %q", file[0], f.Name)
	}
	return "--" + f.Name
}
