"""What the seg-perception commands share: the node's configuration and progress lines (common),
the node as a process (node_process), the camera side of the node benchmarks (bench_harness),
process-bag's map (bag_map), its pictures and video (render), picture panels (pictures)."""
