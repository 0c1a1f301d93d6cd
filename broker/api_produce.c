/* api_produce.c: being written */
