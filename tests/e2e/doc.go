// Package e2e holds detour's end-to-end tests against the local single-node
// cluster (tests/cluster). They carry the build tag e2e and run through
// `make e2e`, which brings the cluster up first and down afterwards.
//
// The kubeconfig is $DETOUR_KUBECONFIG, else the admin kubeconfig in the
// cluster's state directory. TestMain also asserts, after every test, that the
// host egress guard dropped nothing.
package e2e
