/* conn.c: being written */
