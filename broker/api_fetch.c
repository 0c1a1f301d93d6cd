/* api_fetch.c: being written */
