/* coord.c: being written */
