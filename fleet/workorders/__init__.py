"""Work orders: what a crew goes out to do, from an alarm, an operator or a citizen, proven by the device."""
