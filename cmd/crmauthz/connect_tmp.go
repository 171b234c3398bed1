package main

// TEMPORARY (issue 11): the `connect` parent command belongs to the PostgreSQL connector's branch
// (cmd/crmauthz/connect.go). Until that lands, this file registers `connect highlevel`; delete it
// when merging, and add newConnectHighLevelCmd() to the shared parent.

import "github.com/spf13/cobra"

func newConnectCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "connect", Short: "Feed the index from a system of record (connectors)"}
	cmd.AddCommand(newConnectHighLevelCmd())
	return cmd
}
