/* fileio.c: being written */
