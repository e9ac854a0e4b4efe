"""Helpers of `benchmarks.peer`: the shared workload and upstream books (`workload`), process
CPU and memory from /proc (`proc`), the fake ThingsBoard and edge-gateway's receiver
(`upstream`), ThingsBoard IoT Gateway's venv and config (`thingsboard`, run through
`tb_launcher`), edge-gateway's config (`edge`) and the bare-subscriber floors
(`bare_subscriber`). Only `workload`, `proc` and `bare_subscriber`'s framing import no paho."""

__all__: list[str] = []
