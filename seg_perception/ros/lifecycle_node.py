"""camera_seg as a managed (lifecycle) node: the same node, driven through the standard
lifecycle_msgs services (``ros2 lifecycle set /camera_seg configure``, or a launch file's
lifecycle events, or nav2's lifecycle manager).

  unconfigured  parameters declared, diagnostics published; no model, no topics
  configure     loads the model (and builds or loads a TensorRT engine: it can take minutes),
                creates the output publishers and starts the worker threads; a model that
                cannot load fails the transition (back to unconfigured, the reason in the log
                and in diagnostics)
  activate      subscribes the cameras; outputs are published
  deactivate    unsubscribes, outputs stop; the model stays loaded, so activate is immediate
  cleanup       stops the workers, releases the model and the publishers
  shutdown      as cleanup from any state, then the process ends

With the parameter ``autostart`` true the node runs configure and activate on itself at start
(the launch file's managed:=true does so), as a lifecycle manager would; false leaves them to one.

rclpy's lifecycle (LifecycleNodeMixin, lifecycle publishers) is the same in Humble and Jazzy.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from ..core.parameters import MANAGED_SPECS
from .node import CameraSegBase, run_node
from .parameters import descriptor

SUCCESS, FAILURE, ERROR = (TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE,
                           TransitionCallbackReturn.ERROR)


class ManagedCameraSegNode(LifecycleNodeMixin, CameraSegBase):
    """A lifecycle node: starts unconfigured; its outputs are lifecycle publishers, published
    only while active."""

    def __init__(self, **kwargs) -> None:
        CameraSegBase.__init__(self, **kwargs)
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True)
        self.lifecycle_state = "unconfigured"
        own = {spec.name: self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
               for spec in MANAGED_SPECS}
        self._autostart_timer = self.create_timer(0.0, self._autostart) if own["autostart"] else None

    def _autostart(self) -> None:
        """configure, then activate, once the executor runs (the launch file's managed:=true
        asks for it with autostart, instead of launch_ros' LifecycleNode action and events)."""
        self._autostart_timer.cancel()  # once; cancelled, not destroyed inside its own callback
        if self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    def destroy_node(self) -> None:
        # rclpy's lifecycle state machine holds the node's handle, so destroy_node alone left the
        # node, and with it the process's DDS participant, alive until garbage collection; the
        # process ends with os._exit, so its Fast DDS shared-memory segments (64 MB with the
        # shipped profile) stayed in /dev/shm after every clean exit. The node's entities (the
        # lifecycle services among them) go first, so no request reaches a destroyed machine.
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_lifecycle_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub) -> None:
        self.destroy_lifecycle_publisher(pub)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            error = self._configure(load_now=True)
        except Exception as exc:  # a part that cannot be made (a bad TF setup, ...): undo the rest
            error = f"{exc!r}"
        self.configure_error = error or ""
        if error:
            self.get_logger().error(f"configure failed: {error}")
            self._cleanup()
            self.lifecycle_state = "unconfigured"
            return FAILURE
        self.lifecycle_state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret == SUCCESS:
            self._activate()
            self.lifecycle_state = "active"
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.lifecycle_state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._cleanup():
            return ERROR  # a worker that did not stop: on_error tries again, else the node ends
        self.lifecycle_state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        self.lifecycle_state = "finalized"
        self.finished = True  # main() ends the process
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        if not self._cleanup():  # still a worker that will not stop: finalized, the process ends
            self.lifecycle_state = "finalized"
            self.finished = True
            return FAILURE
        self.lifecycle_state = "unconfigured"
        return SUCCESS


def main(args=None) -> None:
    """The camera_seg_lifecycle_node process (exit codes as camera_seg_node's)."""
    run_node(ManagedCameraSegNode, args)


if __name__ == "__main__":
    main()
