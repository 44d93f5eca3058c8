package podfiles

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

const notSet = "is not set"

// Env resolves the environment of pod's container as the kubelet builds
// it — envFrom first (ConfigMap and Secret data, with their prefix), then
// env overriding it in order: literal values with $(VAR) expanded,
// configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef — reading
// every ConfigMap and Secret with cs, the user's own credentials. A value
// the API refuses is left out with a Denied note naming the verb, the
// resource and the namespace; a missing optional one is left out silently,
// a missing required one with a note. The error is for a container that
// does not exist and for API failures other than 403 and 404.
func Env(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) (map[string]string, []Note, error) {
	c, err := findContainer(pod, container)
	if err != nil {
		return nil, nil, err
	}
	r := newReader(cs, pod, c)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if err := r.envFrom(ctx, from, env); err != nil {
			return nil, nil, err
		}
	}
	for _, v := range c.Env {
		if err := r.envVar(ctx, v, env); err != nil {
			return nil, nil, err
		}
	}
	return env, r.notes, nil
}

func (r *reader) envFrom(ctx context.Context, from corev1.EnvFromSource, env map[string]string) error {
	u := use{path: from.Prefix + "*", kind: "envFrom", subject: "envFrom", lost: "sets no variables"}
	if from.Prefix != "" {
		u.subject = fmt.Sprintf("envFrom with prefix %q", from.Prefix)
	}
	var data map[string]string
	switch {
	case from.ConfigMapRef != nil:
		u.optional = isTrue(from.ConfigMapRef.Optional)
		cm, err := r.api.configMap(ctx, from.ConfigMapRef.Name)
		if err != nil {
			return r.absent(err, configMapAccess(r.pod.Namespace, from.ConfigMapRef.Name), u)
		}
		data = cm.Data
	case from.SecretRef != nil:
		u.optional = isTrue(from.SecretRef.Optional)
		s, err := r.api.secret(ctx, from.SecretRef.Name)
		if err != nil {
			return r.absent(err, secretAccess(r.pod.Namespace, from.SecretRef.Name), u)
		}
		data = make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			data[k] = string(v)
		}
	}
	for k, v := range data {
		env[from.Prefix+k] = v
	}
	return nil
}

func (r *reader) envVar(ctx context.Context, v corev1.EnvVar, env map[string]string) error {
	if v.Value != "" || v.ValueFrom == nil {
		env[v.Name] = expand(v.Value, env)
		return nil
	}
	val, ok, err := r.valueFrom(ctx, v.Name, v.ValueFrom)
	if ok {
		env[v.Name] = val
	}
	return err
}

// valueFrom resolves one valueFrom; ok is false when the variable stays
// unset (a note says why, unless it is optional and missing).
func (r *reader) valueFrom(ctx context.Context, name string, src *corev1.EnvVarSource) (v string, ok bool, err error) {
	u := use{path: name, subject: name, lost: notSet}
	switch {
	case src.FieldRef != nil:
		u.kind = "fieldRef"
		return r.downward(ctx, src.FieldRef, nil, u)
	case src.ResourceFieldRef != nil:
		u.kind = "resourceFieldRef"
		return r.downward(ctx, nil, src.ResourceFieldRef, u)
	case src.ConfigMapKeyRef != nil:
		return r.configMapKey(ctx, src.ConfigMapKeyRef, u)
	case src.SecretKeyRef != nil:
		return r.secretKey(ctx, src.SecretKeyRef, u)
	case src.FileKeyRef != nil:
		f := src.FileKeyRef
		r.note(name, "fileKeyRef", fmt.Sprintf("%s %s: it comes from the file %s in volume %q, which lives only in the pod", name, notSet, f.Path, f.VolumeName))
		return "", false, nil
	}
	r.note(name, "valueFrom", fmt.Sprintf("%s %s: its valueFrom names no source detour knows", name, notSet))
	return "", false, nil
}

func (r *reader) configMapKey(ctx context.Context, ref *corev1.ConfigMapKeySelector, u use) (string, bool, error) {
	u.kind, u.optional = "configMapKeyRef", isTrue(ref.Optional)
	cm, err := r.api.configMap(ctx, ref.Name)
	if err != nil {
		return "", false, r.absent(err, configMapAccess(r.pod.Namespace, ref.Name), u)
	}
	v, ok := cm.Data[ref.Key]
	if !ok {
		r.missingKey(fmt.Sprintf("configMap %q", ref.Name), ref.Key, u)
	}
	return v, ok, nil
}

func (r *reader) secretKey(ctx context.Context, ref *corev1.SecretKeySelector, u use) (string, bool, error) {
	u.kind, u.optional = "secretKeyRef", isTrue(ref.Optional)
	s, err := r.api.secret(ctx, ref.Name)
	if err != nil {
		return "", false, r.absent(err, secretAccess(r.pod.Namespace, ref.Name), u)
	}
	v, ok := s.Data[ref.Key]
	if !ok {
		r.missingKey(fmt.Sprintf("secret %q", ref.Name), ref.Key, u)
	}
	return string(v), ok, nil
}

// expand replaces $(VAR) with the value of VAR in vars, as the kubelet
// does: $$ is a literal $, and a reference to an unknown variable (or one
// not closed) stays as written.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
