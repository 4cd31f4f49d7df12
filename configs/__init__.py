"""The benchmark configs (get_config() per file); shipped inside the package as dcjax.configs."""
