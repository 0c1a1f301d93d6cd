/* blog.c: being written */
