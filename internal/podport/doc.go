// Package podport is the one rule for "which container port does this
// Service port reach": the webhook uses it to choose the ports the agent
// serves, the CLI to resolve --port. It is pure.
package podport
