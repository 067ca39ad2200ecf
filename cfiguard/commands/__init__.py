"""The subcommands of `cfiguard`, one module each, thin layers over cfiguard.api and cfiguard.integrations."""
