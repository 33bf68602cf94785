/* Loaded with dlopen by name, the way Python extension modules and plugins are. */
const char *plugin_name(void) { return "plugin"; }
