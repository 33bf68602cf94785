void greet(const char *who, char *out, int len);
