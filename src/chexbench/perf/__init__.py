"""Every ``chexbench bench`` benchmark: throughput, loader, statistics, phantom generation, the GPU check, and
their record in docs/PERFORMANCE.md."""
