package annotations

import (
	"encoding/json"
	"fmt"
	"strings"
)

// TemplateRemovalPatch is the JSON patch that removes annotation from a
// workload's pod template only while it still has value (a test op
// first), so that it neither races a user who changed it nor a second
// remover. The webhook's reapers and the CLI's restore use it.
func TemplateRemovalPatch(annotation, value string) []byte {
	path := "/spec/template/metadata/annotations/" + strings.ReplaceAll(annotation, "/", "~1")
	b, err := json.Marshal([]map[string]string{{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}})
	if err != nil { // strings always marshal
		panic(fmt.Sprintf("marshal removal patch: %v", err))
	}
	return b
}
