unsigned long count_bytes(void);
