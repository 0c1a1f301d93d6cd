/* api_meta.c: being written */
