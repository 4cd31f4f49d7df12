"""dcjax entry point: python main.py --config=configs/benchmark.py --workdir=DIR [--config.x=v].

The same code as the `dcjax run` console command (dcjax.benchmark.cli)."""

from dcjax.benchmark.cli import run_main

if __name__ == "__main__":
  run_main()
