/* waiters.c: being written */
