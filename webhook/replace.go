package webhook

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/detour-dev/detour/internal/annotations"
)

// replaceSpec reads the pod's detour.dev/replace annotation: ok is false
// when it has none; a value that cannot be read is an error (the pod is
// then not injected, with the reason as the admission warning).
func replaceSpec(pod *corev1.Pod) (spec annotations.ReplaceSpec, ok bool, err error) {
	v, ok := pod.Annotations[annotations.Replace]
	if !ok {
		return annotations.ReplaceSpec{}, false, nil
	}
	if spec, err = annotations.ParseReplace(v); err != nil {
		return annotations.ReplaceSpec{}, false, err
	}
	return spec, true, nil
}

// replaceApp stops the app container's own work (replace mode): its
// command becomes the agent binary's sleep, copied into a shared emptyDir
// by an init container from the agent image, so it works whatever the app
// image holds (distroless, scratch). The app's probes and lifecycle hooks
// go (a sleeper answers none of them); its image, env, volumes and ports
// stay, so the client still reads the pod's environment and files from
// the app container. The pod gets the label the restorer watches.
func replaceApp(pod *corev1.Pod, app *corev1.Container, image string, cfg InjectConfig) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: annotations.ReplaceVolume,
		// On disk: in memory the binary (~17 MB) would count against the
		// pod's memory limit.
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("64Mi"))}},
	})
	mount := corev1.VolumeMount{Name: annotations.ReplaceVolume, MountPath: annotations.ReplaceMountPath}
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{
		Name:            annotations.ReplaceInitName,
		Image:           image,
		ImagePullPolicy: cfg.PullPolicy,
		Command:         []string{annotations.AgentBinary},
		Args:            []string{"install-sleeper", annotations.Sleeper},
		Resources:       *cfg.InitResources.DeepCopy(),
		VolumeMounts:    []corev1.VolumeMount{mount},
		SecurityContext: restricted(),
	})
	mount.ReadOnly = true
	app.VolumeMounts = append(app.VolumeMounts, mount)
	app.Command = []string{annotations.Sleeper, annotations.SleepCommand}
	app.Args = nil
	app.LivenessProbe, app.ReadinessProbe, app.StartupProbe = nil, nil, nil
	app.Lifecycle = nil
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[annotations.ReplacedLabel] = annotations.ReplacedLabelValue
}
