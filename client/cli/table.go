package cli

import (
	"io"
	"strings"
	"text/tabwriter"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/logging"
)

type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { io.WriteString(t.tw, strings.Join(cols, "\t")+"\n") }
func (t *table) flush() error       { return t.tw.Flush() }

func newDaemonLogger(w io.Writer) (*zap.Logger, error) {
	return logging.New(w, zap.InfoLevel), nil
}
