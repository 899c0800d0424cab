// Package settings loads a binary's configuration the same way for every flowlens binary: each setting
// has a key, a flag and a default; values come from flags, then FLOWLENS_ environment variables (the key
// upper-cased, dots as underscores), then the YAML file named by --config, then the default.
package settings

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Option is one setting: its key in the file, its flag, its default (which fixes its type) and its help.
type Option struct {
	Key, Flag string
	Default   any
	Usage     string
}

// Load parses args for program against options and decodes the result into out (a pointer to a struct
// with mapstructure tags). It returns the config file it read, if any, and pflag.ErrHelp for --help.
func Load(program string, args []string, options []Option, out any) (string, error) {
	fs := pflag.NewFlagSet(program, pflag.ContinueOnError)
	file := fs.String("config", "", "YAML config file")
	v := viper.New()
	for _, o := range options {
		v.SetDefault(o.Key, o.Default)
		switch d := o.Default.(type) {
		case string:
			fs.String(o.Flag, d, o.Usage)
		case int:
			fs.Int(o.Flag, d, o.Usage)
		case uint32:
			fs.Uint32(o.Flag, d, o.Usage)
		case bool:
			fs.Bool(o.Flag, d, o.Usage)
		case time.Duration:
			fs.Duration(o.Flag, d, o.Usage)
		default:
			return "", fmt.Errorf("setting %s: unsupported default type %T", o.Key, o.Default)
		}
		if err := v.BindPFlag(o.Key, fs.Lookup(o.Flag)); err != nil {
			return "", fmt.Errorf("bind flag %s: %w", o.Flag, err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	v.SetEnvPrefix("FLOWLENS")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if *file != "" {
		v.SetConfigFile(*file)
		if err := v.ReadInConfig(); err != nil {
			return "", fmt.Errorf("read config %s: %w", *file, err)
		}
	}
	if err := v.Unmarshal(out); err != nil {
		return "", fmt.Errorf("parse config: %w", err)
	}
	return *file, nil
}

// O is an Option, written on one line in a binary's table of settings.
func O(key, flag string, def any, usage string) Option {
	return Option{Key: key, Flag: flag, Default: def, Usage: usage}
}
