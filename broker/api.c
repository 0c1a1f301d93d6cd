/* api.c: being written */
