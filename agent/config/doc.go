// Package config holds the agent's configuration, sealrelay.toml: its
// types, Default, Load and Parse (defaults, then the file, then
// validation), and the checks of the options that send a secret over the
// network in clear.
//
// It promises that a Config it returns is valid, and that every error
// names the file, the key and, where known, the line. It does not import
// package agent: a command can read a config without building an agent.
package config
